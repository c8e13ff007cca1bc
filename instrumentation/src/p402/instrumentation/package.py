"""The libraries P402 instruments; either may be absent."""

_instruments = ()
_supports_metrics = False
