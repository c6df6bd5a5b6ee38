"""The torch adapter: the only part of lottery_ticket that imports torch.

Importing ``lottery_ticket`` never imports torch; this package is loaded when a tensor or a
module is first passed in.
"""
