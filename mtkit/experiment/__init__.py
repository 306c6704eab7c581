"""Experiments: the classic findings of the RNN translation papers, one command each.

``python -m mtkit.experiment NAME`` reads ``conf/experiment/NAME.yaml`` (conditions as
lists of training overrides, a budget in updates, seeds, the corpus), trains every
condition with every seed in child processes (``--parallel N`` at once), evaluates each
best checkpoint and writes ``experiments/NAME/``: ``results.csv``, ``comparisons.csv``,
``table.md``, the test hypotheses and PNG figures. The modules:

* ``spec``, ``fields`` and ``load``: what an experiment file holds, the rules of each
  key, and reading and checking a file;
* ``budget``: updates, convergence or minutes, as training overrides;
* ``overrides``: merging override lists and composing them before any run starts;
* ``runner``: run directories, their status (done / evaluate / resume / new), the
  training child and signal forwarding; ``parallel``: several child runners at once;
* ``progress``: time estimates and progress lines;
* ``evaluation``: test-set scoring, cached per run;
* ``statistics`` and ``differences``: intervals over seeds, verdicts, paired tests;
  ``speed``: what each condition costs; ``hypotheses``: the outputs others can test;
* ``report``, ``by_length``, ``figures`` and ``output``: results.csv, table.md and plots;
* ``pipeline``: all of it in order.
"""
