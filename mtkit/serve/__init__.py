"""A local translation service: ``python -m mtkit.serve CKPT [CKPT ...]``.

:mod:`mtkit.serve.batcher` gathers concurrent requests into search batches on one worker
thread: greedy requests join one running search (:mod:`mtkit.serve.greedy` over
:mod:`mtkit.search.stream`), beam requests are decoded in groups; requests, jobs and
counters are in :mod:`mtkit.serve.jobs`. :mod:`mtkit.serve.process` runs that batcher in
a model process of its own (the command line's default; the child's side is
:mod:`mtkit.serve.child`) and starts a new one if it dies, so the HTTP event loop never
holds the model's interpreter lock. :mod:`mtkit.serve.app` is the HTTP API and web
page (FastAPI, an optional extra: ``pip install -e ".[serve]"``), whose JSON shapes and
checks are in :mod:`mtkit.serve.schemas`, and whose body limit is
:mod:`mtkit.serve.limits`; ``static/`` holds the page; :mod:`mtkit.serve.server` is
uvicorn's server stopping within a second or so; :mod:`mtkit.serve.__main__` is the
command line.
"""
