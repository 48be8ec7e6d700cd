"""The suite's own machinery (fault matrices, invariant checkers, corpus strategies, counting
wrappers, the store contract backends): not part of apikey_operator.testing, which keeps only
what a user's tests need."""
