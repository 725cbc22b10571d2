"""Gamma exposure: Black-Scholes greeks and exposure profiles, pure numpy."""
