"""A trained model's embeddings and scores, the evaluators of each setting, metrics,
baselines, predictions and reports."""
