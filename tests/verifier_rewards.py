"""Reward functions that misbehave, for the verifier pool's tests (importable, so workers can run them)."""

import ctypes
import os
import time

from primejax.verifiers import REWARD_FUNCTIONS


@REWARD_FUNCTIONS.register("test_sleepy")
def sleepy(response, ground_truth):
    time.sleep(60)
    return 1.0


@REWARD_FUNCTIONS.register("test_stuck_in_c")
def stuck_in_c(response, ground_truth):
    return float(7 ** (10 ** 8) > 0)        # one long C loop: no signal handler runs until it returns


@REWARD_FUNCTIONS.register("test_segfault")
def segfault(response, ground_truth):
    return float(len(ctypes.string_at(0)))


@REWARD_FUNCTIONS.register("test_exit")
def exits(response, ground_truth):
    os._exit(3)


@REWARD_FUNCTIONS.register("test_memory_hog")
def memory_hog(response, ground_truth):
    return float(len(bytearray(1 << 40)))


@REWARD_FUNCTIONS.register("test_bad_return")
def bad_return(response, ground_truth):
    return "yes"


@REWARD_FUNCTIONS.register("test_out_of_range")
def out_of_range(response, ground_truth):
    return 2.0


@REWARD_FUNCTIONS.register("test_length_ratio")
def length_ratio(response, ground_truth, *, scale=1.0):
    return min(1.0, scale * len(response) / max(len(ground_truth), 1))
