"""Media -> vectors: decoding (``media``), faces (``faces``), DAN (``dan``), the audio encoder
(``audio``), the video pipeline (``video``) and the resumable, sharded job (``job``)."""
