"""core.pause: sleep max_pause seconds, or a random time up to it; returns the seconds."""

import random as randomness
import time

from st2common.runners.base_action import Action


class PauseAction(Action):
    def run(self, max_pause, random=False):
        seconds = randomness.uniform(0, max_pause) if random else max_pause
        time.sleep(max(0, seconds))
        return seconds
