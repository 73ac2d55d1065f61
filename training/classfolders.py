"""Class names <-> the folder names of an image folder (one subfolder of images per class).

The service stores corrections as ``FEEDBACK_DIR/<model>/<folder>/<sha256>.<ext>``, naming the
folder with ``class_folder``; ``train --images DIR`` (training/imagefolder.py) reads each folder's
class with ``class_of_folder``, its inverse. One function each way, used by both sides, so the
two meet at one layout. A folder is the class name itself wherever the name is a safe path
segment ("7", "Trouser"); what is not safe is percent-encoded, so no class name can steer a
path: "/" and "\\" (Fashion-MNIST's "T-shirt/top" is "T-shirt%2Ftop"), "%" itself, control
characters, the characters Windows refuses, and a leading "." (no hidden folder, no "..").
"""

from __future__ import annotations

from urllib.parse import unquote

#: Characters encoded anywhere in a folder name (besides control characters).
_UNSAFE = frozenset('%/\\:*?"<>|')


def class_folder(class_name: str) -> str:
    """The folder of the images of ``class_name``: one path segment, never hidden, never empty."""
    if not class_name:
        raise ValueError("a class name must not be empty")
    encoded = "".join(
        f"%{ord(c):02X}" if c in _UNSAFE or ord(c) < 0x20 or ord(c) == 0x7F else c for c in class_name
    )
    return "%2E" + encoded[1:] if encoded.startswith(".") else encoded


def class_of_folder(folder: str) -> str:
    """The class name a folder made by ``class_folder`` holds (its inverse)."""
    return unquote(folder)
