"""Measuring the answers: precision@k, mAP, ANN recall, feel, groups' agreement with labels."""
