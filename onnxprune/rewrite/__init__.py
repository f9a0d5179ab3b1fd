"""Rewrite: small transforms of the graph, each checked (zero masks, remove channels and dead neurons, fold BN,
int8 quantization, ORT format), and the equivalence check every pruned model passes before it is written."""
