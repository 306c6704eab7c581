"""Parallel corpora: from files or Hugging Face datasets to cached, memory-mapped subword ids.

- :mod:`~mtkit.corpus.sources`: the readers of each split and the fingerprint of its content;
- :mod:`~mtkit.corpus.prepare`: preparation in streaming stages (read, sentencepiece, encode);
- :mod:`~mtkit.corpus.encode`: encoding chunks, in worker processes when there are many;
- :mod:`~mtkit.corpus.layout`: the files of a split and :class:`CorpusSplit`, their view;
- :mod:`~mtkit.corpus.integrity`: checking an entry, removing the leftovers of killed builds;
- :mod:`~mtkit.corpus.cache`: :func:`load_corpus`, which ties them together.

Import the public names from :mod:`mtkit.data`. This package imports nothing on its
own, so the encoding workers start without loading more than they need.
"""
