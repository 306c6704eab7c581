"""Experiments: the classic findings of the RNN translation papers, one command each.

``python -m mtkit.experiment NAME`` reads ``conf/experiment/NAME.yaml`` (conditions as
lists of training overrides, a wall-clock budget, seeds, the corpus), trains every
condition with every seed in child processes, evaluates each best checkpoint and writes
``experiments/NAME/``: ``results.csv``, ``table.md`` and PNG figures. The modules:

* ``spec`` and ``load``: what an experiment file holds, and reading and checking it;
* ``overrides``: merging override lists and composing them before any run starts;
* ``runner``: run directories, their status (done / evaluate / resume / new), the
  training child and signal forwarding;
* ``progress``: time estimates and progress lines;
* ``evaluation``: test-set scoring, cached per run;
* ``report`` and ``figures``: results.csv, table.md and the plots;
* ``pipeline``: all of it in order.
"""
