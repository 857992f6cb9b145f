module dmxp.dev/dmxp

go 1.19
