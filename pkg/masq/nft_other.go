//go:build !linux

package masq

// deleteJumpByHandle needs nf_tables: elsewhere the caller deletes by
// position.
func deleteJumpByHandle(table, chain string, pos int, target string) (handled bool, err error) {
	return false, nil
}
