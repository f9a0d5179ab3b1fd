"""Graph core for structured pruning: channel groups, channel removal, BN folding, parameter/MAC counts."""
from .count import ModelCount, NodeCount, count
from .groups import ChannelGroup, Member, analyse, bn_scales, producer_l1
from .rewrite import fold_bn, remove_channels, zero_consumers

__all__ = ["ChannelGroup", "Member", "ModelCount", "NodeCount", "analyse", "bn_scales", "count", "fold_bn",
           "producer_l1", "remove_channels", "zero_consumers"]
