"""The apparatus of single chapters, kept apart from the reusable library: ``figures`` (chapters 1-2), ``anatomy``
(3), ``flawed`` (4), ``train_plots`` (5), ``experiments`` (6), ``images``, ``gradcam``, ``viz`` (7), ``bench``,
``profiling`` (8), and ``style``, the book's one palette. ``xl.anatomy``, ``xl.viz``, ... reach them from the one
import ``import xception_lib as xl``; command lines: ``python -m xception_lib.chapters {bench,cifar10,ablations}``.
"""
