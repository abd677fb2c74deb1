"""Files on disk: atomic writes, checkpoints (read safely, written atomically), run directories and their lock.

The ground floor: it knows the file system, torch's checkpoint format and this project's errors, nothing of
photos, networks or training.
"""
