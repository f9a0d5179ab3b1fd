"""Select: the `Plan` (what to prune, as reviewable data) and how it is chosen: weight masks, kept channels."""
