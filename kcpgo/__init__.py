"""kcpgo: kcp-go's reliable UDP (KCP ARQ, Reed-Solomon FEC, kcp-go ciphers) for Python."""
__version__ = "0.1.0"
