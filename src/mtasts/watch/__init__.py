"""`mtasts watch`: observe domains over time, detect changes, alert."""
