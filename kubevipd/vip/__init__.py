"""The VIP on the host: netlink address add/remove and the link and address monitor."""
