module github.com/sturdyoci/sturdy

go 1.26
