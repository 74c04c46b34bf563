"""Model updates between active-learning rounds, shared by simulations and sessions.

- :mod:`adaptner.update.trainers`: the round trainers (``fine_tune``, ``cached_head``,
  ``top_layers``), :func:`~adaptner.update.trainers.update_pipeline` and weight snapshots.
- :mod:`adaptner.update.features`: the cache of encoder outputs that ``cached_head`` trains
  and scores on.
- :mod:`adaptner.update.replay`: the seeded sample of source docs replayed with every round.

Nothing here imports :mod:`adaptner.simulation` or :mod:`adaptner.session`.
"""
