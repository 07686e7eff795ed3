"""In-memory fakes of the ports (`gpurent.ports`): the stores and Stripe, for unit tests that
run the money core in milliseconds. Not part of the layer."""
