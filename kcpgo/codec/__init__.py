"""Pure byte codecs: kcp-go's packet ciphers (:mod:`.crypt`) and Reed-Solomon over GF(2^8)
(:mod:`.reedsolomon`). They import nothing else from kcpgo, no I/O and no clock."""
