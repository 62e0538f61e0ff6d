package sriovtest

// pciIDs is a small PCI ID database in the format of pci.ids: the devices the fixtures use
// and the classes they have.
const pciIDs = `# A small PCI ID database for fake sysfs trees.
8086  Intel Corporation
	1572  Ethernet Controller X710 for 10GbE SFP+
	154c  Ethernet Virtual Function 700 Series
	1592  Ethernet Controller E810-C for QSFP
	1889  Ethernet Adaptive Virtual Function
	2020  Sky Lake-E DMI3 Registers
15b3  Mellanox Technologies
	1017  MT27800 Family [ConnectX-5]
	1018  MT27800 Family [ConnectX-5 Virtual Function]
C 02  Network controller
	00  Ethernet controller
C 06  Bridge
	00  Host bridge
`
