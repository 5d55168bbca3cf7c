"""Where data from outside enters, each kind parsed once: files, checkpoints, pictures, run folders, config sizes.
Plain Python and torch: nothing here imports Lightning."""
