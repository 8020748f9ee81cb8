"""A reward with TRL's signature used by the trainer tests: the fraction of digits produced."""


def digit_fraction(prompts, completions, **columns):
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]
