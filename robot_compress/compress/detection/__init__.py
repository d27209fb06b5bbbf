"""Object detection on the compression side: a trainable YOLOX in torch and its contract export."""
