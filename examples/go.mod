module github.com/sturdyoci/sturdy/examples

go 1.26

replace github.com/sturdyoci/sturdy => ../
