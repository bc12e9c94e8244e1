// Command coredns is the test rig's cluster DNS: CoreDNS with only the plugins a
// cluster without upstream resolvers needs. The release's own build links every
// plugin (and with them the cloud providers' SDKs); this one builds in a fraction of
// the time. build.sh builds it into the rig's bin/.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
