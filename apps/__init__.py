"""kbnn_apps: the applications built on the kbnn library.

* `kbnn_apps.cli`: the `kbnn` command (convert, inspect, summary, verify, bench, demo);
  ``python -m kbnn_apps`` runs it too.
* `kbnn_apps.demo`: the digits demo (train, convert, verify, benchmark, report).
* `kbnn_apps.bench`: latency and size of an LCE flatbuffer next to its float twin.

This package is kept apart from the library (`kbnn`) so that the command line can parse its
arguments, print ``--help`` and report usage errors without importing TensorFlow: importing
`kbnn_apps` or `kbnn_apps.cli` loads only the standard library.
"""
