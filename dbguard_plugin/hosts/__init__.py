"""Host adapters: each one translates a trading framework's own callbacks into dbguard's
hooks, and nothing more. They import their framework lazily, so dbguard installs and
type-checks without it."""
