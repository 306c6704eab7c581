"""Parallel corpora: from files or Hugging Face datasets to cached, memory-mapped subword ids.

From the bottom up:

- :mod:`~mtkit.corpus.readers`: text files, TSV and JSONL to validated string pairs;
- :mod:`~mtkit.corpus.tokenizer`: sentencepiece models and :class:`TextCodec` (text <-> ids);
- :mod:`~mtkit.corpus.fingerprint`: file fingerprints (remembered for big files), the cache folder;
- :mod:`~mtkit.corpus.sources`: the readers of each split and the fingerprint of its content;
- :mod:`~mtkit.corpus.layout`: the files of a split and :class:`CorpusSplit`, their view;
- :mod:`~mtkit.corpus.encode` (with :mod:`~mtkit.corpus.worker`): encoding chunks, in
  worker processes when there are many;
- :mod:`~mtkit.corpus.subwords`: training sentencepiece in a child process;
- :mod:`~mtkit.corpus.progress`: progress lines of the long stages;
- :mod:`~mtkit.corpus.prepare`: preparation in streaming stages (read, sentencepiece, encode);
- :mod:`~mtkit.corpus.integrity`: checking an entry, removing the leftovers of killed builds;
- :mod:`~mtkit.corpus.cache`: :func:`load_corpus`, which ties them together;
- :mod:`~mtkit.corpus.batching`: token-budget batches of a split, collated into tensors.

Import names from these modules. This package imports nothing on its own, so the
encoding workers start without loading more than they need.
"""
