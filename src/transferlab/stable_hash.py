"""Seeds from a key of integers, the same in every process, on every machine and under every Python.

`seed_of(seed, epoch, index)` is what `hash((seed, epoch, index)) & 0x7FFF_FFFF` gives on 64-bit
CPython 3.8+ (the tuple hash of xxHash's primes over the ints' own hashes), written out: Python keeps its
tuple hash free to change between versions, and the seeds of a resumed or continued run must not.
"""

from __future__ import annotations

MASK64 = (1 << 64) - 1
PRIME_1, PRIME_2, PRIME_5 = 11400714785074694791, 14029467366897019727, 2870177450012600261
MODULUS = (1 << 61) - 1  # CPython's int hash: n mod 2**61 - 1, with the sign, and -1 taken as -2


def int_hash(value: int) -> int:
    reduced = abs(value) % MODULUS
    hashed = reduced if value >= 0 else -reduced
    return -2 if hashed == -1 else hashed


def seed_of(*key: int) -> int:
    """A 31-bit seed of the integers `key` (a generator's manual_seed and random.Random take it)."""
    acc = PRIME_5
    for item in key:
        acc = (acc + (int_hash(item) & MASK64) * PRIME_2) & MASK64
        acc = ((acc << 31) | (acc >> 33)) & MASK64
        acc = (acc * PRIME_1) & MASK64
    acc = (acc + (len(key) ^ (PRIME_5 ^ 3527539))) & MASK64
    if acc == MASK64:  # CPython never returns -1 from a hash
        acc = 1546275796
    return acc & 0x7FFF_FFFF
