"""ucwasim: a UCWA 2.0 server simulator for tests and demos."""
