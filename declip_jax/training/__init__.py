"""The training core (docs/design.md §7, §11): the train state, its setup from a config, the jitted step, the
optimiser, the nearest-neighbour queue, loss-spike recovery and checkpoints. Imports no TensorFlow; train.py runs
the loop around it."""
