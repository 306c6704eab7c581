"""``python -m mtkit.corpus.worker``: one corpus encoding process (see :mod:`mtkit.corpus.encode`).

It reads requests from stdin and writes replies to stdout, each a length-prefixed
pickle: first ``("start", src_model_path, tgt_model_path | None, reverse_source)``,
then ``("encode", text_path, chunk_index, max_len | None)`` for each chunk, answered by
``("ok", EncodedChunk)`` or ``("error", message)``. It exits at the end of its input.
Ctrl-C is left to the parent, which stops its workers itself.
"""

from __future__ import annotations

import signal
import sys
import traceback
from pathlib import Path

from mtkit.corpus.encode import encode_texts
from mtkit.corpus.helper import read_message, serve_quietly, write_message
from mtkit.corpus.layout import TextReader
from mtkit.corpus.tokenizer import SubwordModel, TextCodec


def serve() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    start = read_message(requests)
    if start is None:
        return
    _, src_path, tgt_path, reverse = start
    src = SubwordModel(Path(src_path).read_bytes(), threads=1)  # the cores are the workers'
    tgt = src if tgt_path is None else SubwordModel(Path(tgt_path).read_bytes(), threads=1)
    codec = TextCodec(src, tgt, reverse)
    reader: TextReader | None = None
    reading = ""
    while (request := read_message(requests)) is not None:
        _, path, index, max_len = request
        try:
            if reader is None or path != reading:
                if reader is not None:
                    reader.close()
                reader, reading = TextReader(Path(path)), path
            src_texts, tgt_texts = reader.batch(index)
            reply: tuple[str, object] = ("ok", encode_texts(codec, src_texts, tgt_texts, max_len))
        except Exception:  # reported to the parent, which raises it there
            reply = ("error", traceback.format_exc(limit=3).strip().splitlines()[-1])
        write_message(replies, reply)


if __name__ == "__main__":
    serve_quietly(serve)
