module trine/deploy/launcher

go 1.26.0
