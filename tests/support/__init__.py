"""Helpers the tests share: worker processes, producer fakes, the compose stack as local processes."""
