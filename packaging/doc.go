// Package packaging holds what `make package` builds the keep-vip .deb and
// .rpm from (nfpm.yaml, the maintainer scripts, the Debian copyright) and
// the tests `make test` runs on the packages it made.
package packaging
