"""--round-to rounds kept counts to the nearest multiple (never below the floor, never above the group), and counts
the channels a group tied across conv groups stands for."""
import numpy as np

from onnxprune.select.channels import rounded_all


def test_nearest_multiple_not_up():
    k = np.array([9, 12, 13, 3, 1, 30])
    sizes = np.array([16, 16, 16, 16, 16, 32])
    floor = np.ones(6, int)
    # 9 → 8 (rounding up kept the whole 16-channel group), 12 → 16 (half up, to even), 13 → 16, 3 → 8 (one multiple
    # at least), 1 → 8, 30 → 32
    assert rounded_all(k, floor, sizes, 8).tolist() == [8, 16, 16, 8, 8, 32]


def test_floor_and_group_size_win():
    k = np.array([9, 2, 5])
    sizes = np.array([16, 6, 40])
    floor = np.array([10, 1, 1])
    assert rounded_all(k, floor, sizes, 8).tolist() == [16, 6, 8]


def test_per_group_multiples_for_tied_groups():
    # a group of 4 free channels × 32 conv groups: --round-to 8 needs multiples of 1 free channel
    k = np.array([[1, 2, 3], [5, 9, 11]])
    sizes = np.array([4, 16])
    floor = np.ones(2, int)
    assert rounded_all(k, floor, sizes, np.array([1, 8])).tolist() == [[1, 2, 3], [8, 8, 8]]
