"""The apparatus of single chapters, kept apart from the reusable library.

Each module here serves one chapter of the book and is not needed to build, train or load
an Xception:

- ``figures``: the diagrams of chapters 1 and 2 (Inception modules, the continuum).
- ``anatomy``: chapter 3's layer tables and shape traces.
- ``flawed``: chapter 4's measurements that expose a flawed Xception (the flaws are on its page).
- ``train_plots``: chapter 5's learning curves, confusion matrix and prediction gallery.
- ``experiments``: chapter 6's ablation sweeps, their tables, plots and verdicts.
- ``images``, ``gradcam``, ``viz``: chapter 7's photos, Grad-CAM and feature maps.
- ``bench``, ``profiling``: chapter 8's reading of benchmark results, and its profiles.
- ``style``: the book's one palette and figure settings.

Their command lines share one entry point: ``python -m xception_lib.chapters {bench,cifar10,ablations}``.

``xl.anatomy``, ``xl.viz``, ... reach these modules from the one import ``import xception_lib as xl``.
"""
