"""The drift monitor: detectors over live inputs, outputs and errors that raise drift events."""
