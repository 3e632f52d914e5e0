"""The AVAFN network. Its definition, equation by equation: reference.py; the fast
implementations: CAM fusion (fusion.py), dialogue recurrence (dialogue.py, bptt.py), whole model
(avafn.py); which one runs: backend.py."""

from .avafn import AVAFN, AVAFNConfig

__all__ = ["AVAFN", "AVAFNConfig"]
