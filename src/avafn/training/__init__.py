"""Training and scoring a run.

- :mod:`avafn.training.loop`: ``train(...)``, the training loop (seeds, dev selection,
  early stopping, bit-identical resume) that writes a run folder;
- :mod:`avafn.training.kit`: what every training loop shares (seeding, dev selection, the
  weighted-F1 metric, the non-finite check, RNG states);
- :mod:`avafn.training.evaluate`: metrics over seeds, ``report.json`` / ``report.md`` and
  the run's figures, robustness to missing modalities;
- :mod:`avafn.training.finetune`: fine-tuning a text encoder on a corpus, then embedding it.
"""
