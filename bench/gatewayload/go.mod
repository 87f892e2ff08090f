module trine/bench/gatewayload

go 1.23.0
