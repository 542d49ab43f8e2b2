"""facegate's device side. Importing it bounds OpenCV's image decoders before cv2 loads."""

import os

# OpenCV reads this once, when the library loads: the second line behind the header check in
# edge/perception/imageheader.py (MAX_PIXELS, the same number; a test keeps them equal), for a
# decoder that allocates from a size we did not parse. An operator's own value wins.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", "80000000")
