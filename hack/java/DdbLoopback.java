// Starts DynamoDB Local (Maven Central: software.amazon.dynamodb:DynamoDBLocal) bound to 127.0.0.1 only.
// DynamoDB Local has no bind-address option and its Jetty connector listens on every interface, so
// this launcher builds the server exactly as DynamoDB Local's own ServerRunner does, then sets the
// host of its Jetty connectors to 127.0.0.1 before starting it. Arguments are ServerRunner's own.
import java.lang.reflect.Field;

import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import software.amazon.dynamodb.services.local.main.ServerRunner;
import software.amazon.dynamodb.services.local.server.DynamoDBProxyServer;

public class DdbLoopback {
    public static void main(String[] args) throws Exception {
        DynamoDBProxyServer proxy = ServerRunner.createServerFromCommandLineArgs(args);
        Field f = DynamoDBProxyServer.class.getDeclaredField("server");
        f.setAccessible(true);
        Server jetty = (Server) f.get(proxy);
        int bound = 0;
        for (Connector c : jetty.getConnectors()) {
            if (c instanceof ServerConnector) {
                ((ServerConnector) c).setHost("127.0.0.1");
                bound++;
            }
        }
        if (bound == 0) {
            throw new IllegalStateException("DynamoDB Local has no Jetty ServerConnector to bind to 127.0.0.1");
        }
        proxy.start();
        Thread.currentThread().join();
    }
}
