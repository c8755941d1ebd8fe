"""Reading what the user gives: image files (safe decoding), file names, labels."""
