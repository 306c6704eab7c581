"""What the commands share: output files, signals, option checks and plots."""
