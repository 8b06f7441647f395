"""How the leader tells the network where the VIP is: ARP/NDP now, BGP and Metal later."""
