"""A decoder that kills its process on files named crash*.mp4 (as a crash inside FFmpeg
would); kept free of heavy imports so spawned workers start fast."""

import os

from avafn.extract.media import decode_audio


def decode_or_die(path, start=None, end=None):
    if os.path.basename(str(path)).startswith("crash"):
        os._exit(3)
    return decode_audio(path, start, end)
