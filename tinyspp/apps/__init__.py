"""What a user runs: the command line and the applications behind it.

``python -m tinyspp <command>`` dispatches (:mod:`tinyspp.apps.cli`) to one module per command:
``demo`` (:mod:`~tinyspp.apps.demo`), ``train`` (:mod:`~tinyspp.apps.train`), ``experiment``
(:mod:`~tinyspp.apps.experiments`), ``detect`` (:mod:`~tinyspp.apps.detect`, whose demo is
:mod:`~tinyspp.apps.detect_demo`). Markdown tables and figures of the reports are in
:mod:`~tinyspp.apps.reporting`; options shared by several commands in :mod:`~tinyspp.apps.options`.
The applications import the library; the library never imports them.
"""
