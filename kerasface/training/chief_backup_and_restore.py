"""BackupAndRestore for multi-worker runs: every worker restores, only the chief writes."""

import keras


class ChiefBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` whose backup is written by the chief alone.

    Keras 3's callback has no multi-worker logic: every worker would write the same files
    at once. Under ``MultiWorkerMirroredStrategy`` all workers hold the same weights after
    each synchronised step, so one copy suffices; the other workers read it at the start of
    ``fit`` (all of them must resume from the same epoch, or their collectives deadlock).
    A worker that is killed therefore costs the run at most the epoch it was in: restart
    every worker with the same command and they continue from the chief's last backup.

    Args:
        backup_dir: the shared backup folder (the chief's run directory + ``backup``).
        is_chief: whether this process writes the backup.
        **kwargs: ``keras.callbacks.BackupAndRestore`` arguments (``save_freq``, ...).
    """

    def __init__(self, backup_dir, is_chief=True, **kwargs):
        super().__init__(backup_dir, **kwargs)
        self.is_chief = bool(is_chief)

    def _save_model(self):
        if self.is_chief:
            super()._save_model()

    def on_train_end(self, logs=None):
        if self.is_chief:
            super().on_train_end(logs)
